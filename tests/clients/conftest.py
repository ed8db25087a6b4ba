"""The client package (clients/python, its own distribution) is installed editable into the
venv by the Makefile (`make install-test`), so these tests import the source tree."""
