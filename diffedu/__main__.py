import os
import sys

try:
    from .cli import main  # imports torch: seconds, during which Ctrl-C must not print a traceback either
except KeyboardInterrupt:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, said by process 0 alone
        print("\ninterrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
