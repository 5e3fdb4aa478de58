#!/bin/sh
# Run the command lines of queue2.txt (python scripts beside this file, with their arguments) one at a time.
cd "$(dirname "$0")"
while [ -s queue2.txt ]; do
  line=$(head -n 1 queue2.txt); sed -i 1d queue2.txt
  echo "== $line" >> /tmp/ctg-queue.log
  OMP_NUM_THREADS=1 sh -c "../../.venv/bin/python $line" 2>&1 | grep '^{' >> /tmp/ctg-queue.log
done
