#!/bin/sh
# Run the commands of queue.txt one at a time (the first line is taken off before it runs); stop when it is empty.
cd "$(dirname "$0")"
while [ -s queue.txt ]; do
  line=$(head -n 1 queue.txt); sed -i 1d queue.txt
  echo "== $line" >> /tmp/ctg-queue.log
  OMP_NUM_THREADS=1 sh -c "../../.venv/bin/python ctg.py $line" 2>&1 | grep '^{' >> /tmp/ctg-queue.log
done
