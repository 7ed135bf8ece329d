"""Workers: one front that uses every core (DEDUP_WORKERS=N > 1).

    python -m dedup_server            the supervisor (supervisor.py): reserves the port, serves /metrics,
    ├── python -m dedup_server.workers --index 1 ...   a worker (worker.py): a whole front on that port
    └── python -m dedup_server.workers --index 2 ...   (SO_REUSEPORT: the kernel spreads connections)

Each worker is a front like any other: its own event loop, decode threads, micro-batchers, Triton, Milvus and etcd
clients, its own etcd lease; the writes of a collection take turns between workers as between hosts. Each answers
grpc.health.v1 for itself. The supervisor restarts a worker that dies (with a log line, backing off) and gives up
after a crash loop; SIGTERM drains every worker (NOT_SERVING, grace, exit) and the supervisor exits 0. /metrics is
the supervisor's: prometheus_client's multiprocess mode sums the files every worker writes.
"""

from .supervisor import READY, RestartPolicy, Supervisor

__all__ = ["READY", "RestartPolicy", "Supervisor"]
