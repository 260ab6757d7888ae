import re

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Run a Celery engine worker for this site (services mode). Without --queues it takes "
        "every queue: text, embedding, image, video, audio, upstream, engine (other tasks) and "
        "any queue an operator gave a model. With --queues it takes only those, e.g. a GPU "
        "machine: --queues image,video."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queues",
            default=None,
            help="Comma-separated queues to consume (default: all). Models go to the queue of "
            "their modality (text, embedding, image, video, audio), to upstream when another "
            "server runs them, or to the queue an operator set on the model.",
        )
        parser.add_argument("--concurrency", type=int, default=None)
        parser.add_argument("--pool", default=None, help="prefork (default), threads or solo.")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options):
        from celery.signals import worker_ready
        from django.db import connections

        from playground.celery import app
        from playground.engine import registry
        from playground.models import QUEUE_RE

        if options["queues"] is None:
            queues = registry.all_queues()
        else:
            queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
            bad = [q for q in queues if not re.fullmatch(QUEUE_RE, q)]
            if not queues or bad:
                raise CommandError(f"--queues: not a list of queue names: {options['queues']!r}")

        # Forked worker processes must not inherit this process's database connections.
        for connection in connections.all(initialized_only=True):
            connection.close()
            if hasattr(connection, "close_pool"):
                connection.close_pool()

        def announce(**kwargs):
            # Celery's own "ready." line is an INFO log, which LOGGING keeps quiet.
            self.stdout.write(f"engine worker ready, queues: {', '.join(queues)}")
            self.stdout.flush()

        worker_ready.connect(announce, weak=False)
        argv = ["worker", "--queues", ",".join(queues), "--loglevel", options["loglevel"]]
        argv += ["--without-gossip", "--without-mingle"]
        if options["concurrency"]:
            argv += ["--concurrency", str(options["concurrency"])]
        if options["pool"]:
            argv += ["--pool", options["pool"]]
        app.worker_main(argv)
