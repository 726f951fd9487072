"""One library function per command of the command line: files in, files out.

Each reads its inputs, calls the layers below (``segment``, ``report``, ``model``, ...) and
writes its outputs atomically; the CLI only parses arguments, calls one of these and prints.
"""
