"""Real servers for black-box tests: daphne (and, in services mode, a separate worker process).

`start_site(tmp_path, services=False)` gives a migrated site on a free port: embedded mode on a
fresh SQLite file, or services mode on a fresh PostgreSQL database and its own Redis db number.
Each run migrates one template database per mode and copies it for every site (migrate takes
2.7 s on SQLite and 4.6 s on PostgreSQL here; a copy 0.01 s and 0.24 s).
"""

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("PLAYGROUND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("PLAYGROUND_TEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def services_available() -> bool:
    try:
        import psycopg
        import redis

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            pass
        redis.Redis.from_url(REDIS_BASE, socket_connect_timeout=2).ping()
        return True
    except Exception:
        return False


def require_services():
    """Skip (or, with PLAYGROUND_REQUIRE_SERVICES=1, fail) when PostgreSQL or Redis is missing."""
    if services_available():
        return
    if os.environ.get("PLAYGROUND_REQUIRE_SERVICES") == "1":
        pytest.fail(
            "PostgreSQL and Redis are required (PLAYGROUND_REQUIRE_SERVICES=1) but not answering"
        )
    pytest.skip("PostgreSQL or Redis not available")


@dataclass
class LiveSite:
    base_url: str
    ws_url: str
    env: dict
    processes: list = field(default_factory=list)
    cleanup: list = field(default_factory=list)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def user_with_key(self, email: str, credits: str = "10", tier: str = "unlimited") -> str:
        """Create a user with credits and return a fresh API key for it (no rate limits)."""
        password = "pw-" + secrets.token_hex(8)
        self.manage(
            "users", "add", email, "--password", password, "--credits", credits, "--tier", tier
        )
        return self.manage("apikey", "create", email).stdout.strip()

    def start_process(self, *args: str, log_name: str) -> subprocess.Popen:
        log = open(self.env["PLAYGROUND_DATA_DIR"] + f"/{log_name}.log", "w")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def start_worker(self, *args: str, log_name: str, ready: bool = True) -> subprocess.Popen:
        """A `manage.py worker` with these arguments (e.g. "--queues", "text"); with `ready`,
        returns once it consumes from its queues."""
        proc = self.start_process(
            sys.executable, "manage.py", "worker", "--loglevel", "INFO", *args, log_name=log_name
        )
        if ready:
            deadline = time.monotonic() + 60
            while "engine worker ready" not in self.log(log_name):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {log_name} did not start:\n{self.log(log_name)}")
                time.sleep(0.1)
        return proc

    def shell(self, code: str) -> str:
        """Run Python in this site's Django (manage.py shell -c); returns what it printed."""
        return self.manage("shell", "-v", "0", "-c", code).stdout

    def log(self, name: str) -> str:
        return Path(self.env["PLAYGROUND_DATA_DIR"], f"{name}.log").read_text()

    def stop(self):
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for step in self.cleanup:
            step()


_templates: dict[str, str] = {}
_templates_lock = threading.Lock()
SQLITE_NAME = "playground.sqlite3"  # settings: PLAYGROUND_DATA_DIR / this


def _migrate(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip


def _template(services: bool, env: dict) -> str:
    """This run's migrated template: a SQLite file's path, or a PostgreSQL database's name."""
    kind = "pg" if services else "sqlite"
    with _templates_lock:
        if kind in _templates:
            return _templates[kind]
        if services:
            import psycopg

            name = "pg_live_tmpl_" + secrets.token_hex(4)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            atexit.register(_drop_database, name)
            _migrate({**env, "DATABASE_URL": _database_url(name)})
            _templates[kind] = name
        else:
            folder = tempfile.mkdtemp(prefix="playground-template-")
            atexit.register(shutil.rmtree, folder, True)
            _migrate({**env, "PLAYGROUND_DATA_DIR": folder})
            _templates[kind] = str(Path(folder, SQLITE_NAME))
        return _templates[kind]


def _database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer in {timeout} s")


def start_site(
    tmp_path: Path,
    services: bool = False,
    workers: int = 1,
    extra_env=None,
    worker_args: tuple[str, ...] = ("--concurrency", "2"),
) -> LiveSite:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="playground.settings",
        PLAYGROUND_DATA_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    env.update(extra_env or {})
    cleanup = []
    if services:
        import psycopg
        import redis

        name = "pg_live_" + secrets.token_hex(4)
        db_number = 1 + secrets.randbelow(15)
        env["REDIS_URL"] = f"{REDIS_BASE}/{db_number}"
        template = _template(True, env)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        env["DATABASE_URL"] = _database_url(name)
        # Its own key prefix: two sites on one Redis never take each other's jobs.
        env["PLAYGROUND_REDIS_PREFIX"] = "pgtest" + secrets.token_hex(4)
        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        cleanup.append(lambda: _drop_database(name))
    else:
        database = Path(tmp_path, SQLITE_NAME)
        if not database.exists():
            Path(tmp_path).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_template(False, env), database)
    site = LiveSite(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", env, cleanup=cleanup)
    server = site.start_process(
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "playground.asgi:application",
        log_name="daphne",
    )
    if services:
        for i in range(workers):
            site.start_process(
                sys.executable,
                "manage.py",
                "worker",
                *worker_args,
                "--loglevel",
                "WARNING",
                log_name=f"worker{i}",
            )
    try:
        wait_http(site.base_url + "/healthz", server)
    except Exception:
        site.stop()
        raise
    return site
