import os
import sys

from training import PROCESS_ENV

for name, value in PROCESS_ENV.items():  # before anything imports torch, which reads them once
    os.environ.setdefault(name, value)

from training.cli import main  # noqa: E402

sys.exit(main())
