"""Private servers for the demo, ``asyncphp dev``, the tests and the benchmark."""
