"""`python -m cnnexport`: the `cnnexport` command."""
import sys

from .cli import main

sys.exit(main())
