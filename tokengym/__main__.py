import sys

from tokengym.cli import main

sys.exit(main())
