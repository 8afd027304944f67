"""`python -m tasks.worker`: one worker process (see `tasks.worker.process`)."""

import sys

from tasks.worker.process import main

sys.exit(main())
