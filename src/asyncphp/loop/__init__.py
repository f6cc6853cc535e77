"""The event loop and its I/O: it carries out what ``asyncphp.core`` decides."""
