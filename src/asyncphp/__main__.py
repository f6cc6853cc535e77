import sys

from asyncphp.cli import main

sys.exit(main())
