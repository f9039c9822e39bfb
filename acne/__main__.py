"""`python -m acne analyze PATH...` / `python -m acne batch INPUT...`: see acne/cli.py."""
import sys

from .cli import main

if __name__ == "__main__":  # not when a `batch` worker process (spawn) imports this module
    sys.exit(main())
