"""`python -m acne analyze PATH...`: see acne/cli.py."""
import sys

from .cli import main

sys.exit(main())
