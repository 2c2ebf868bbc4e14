"""`python -m gist_core.cli`."""
import sys

from gist_core.cli import main

sys.exit(main())
