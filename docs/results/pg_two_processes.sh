#!/bin/bash
# Two service processes (int8 graph, 1 thread each) sharing one PostgreSQL database, 4 clients (2 per process).
set -x
cd "$(dirname "$0")/../.." && source .venv/bin/activate && mkdir -p runs/pg
D=$(mktemp -d /tmp/pgmeasure-XXXX); chown postgres "$D"
PGBIN=/usr/lib/postgresql/15/bin
runuser -u postgres -- $PGBIN/initdb -D "$D/data" -U pcbsiam --auth=trust -E UTF8 --locale=C > /dev/null
runuser -u postgres -- $PGBIN/pg_ctl -D "$D/data" -l "$D/server.log" -w -o "-p 55432 -k $D -c listen_addresses=127.0.0.1" start
psql -h 127.0.0.1 -p 55432 -U pcbsiam -d postgres -c 'CREATE DATABASE pcbsiam'
DB=postgresql+psycopg://pcbsiam@127.0.0.1:55432/pcbsiam
M="--model runs/after/fold00041-gate.bundle --engine runs/speed2/gate-int8.onnx --db $DB --host 127.0.0.1 --workers-threads 1 --threads 1 --log-level warning"
pcbsiam serve $M --port 8801 > runs/pg/serve1.log 2>&1 & P1=$!
pcbsiam serve $M --port 8802 > runs/pg/serve2.log 2>&1 & P2=$!
for p in 8801 8802; do for i in $(seq 90); do curl -sf http://127.0.0.1:$p/healthz >/dev/null && break; sleep 1; done; done
P=../shared/datasets/DeepPCB/PCBData/group00041/00041
T="--tested $P/00041000_test.jpg --template $P/00041000_temp.jpg"
pcbsiam serve-loadtest --url http://127.0.0.1:8801 --clients 2 --requests 50 $T --db $DB > runs/pg/lt1.json &
L1=$!
pcbsiam serve-loadtest --url http://127.0.0.1:8802 --clients 2 --requests 50 $T --db $DB > runs/pg/lt2.json &
L2=$!
wait $L1 $L2
psql -h 127.0.0.1 -p 55432 -U pcbsiam -d pcbsiam -Atc 'SELECT count(*), count(DISTINCT id) FROM inspections' > runs/pg/count.txt
kill $P1 $P2; wait $P1 $P2
runuser -u postgres -- $PGBIN/pg_ctl -D "$D/data" -m fast stop; rm -rf "$D"
echo done
