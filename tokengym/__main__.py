from tokengym.cli import main
from tokengym.lm.distributed import exit_process

exit_process(main())
