import sys

try:
    from .cli import main  # imports torch: seconds, during which Ctrl-C must not print a traceback either
except KeyboardInterrupt:
    print("\ninterrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
