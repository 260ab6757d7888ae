from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run a Celery engine worker for this site (services mode)."

    def add_arguments(self, parser):
        parser.add_argument("--queues", default="engine", help="Comma-separated queues to consume.")
        parser.add_argument("--concurrency", type=int, default=None)
        parser.add_argument("--pool", default=None, help="prefork (default), threads or solo.")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options):
        from playground.celery import app

        argv = ["worker", "--queues", options["queues"], "--loglevel", options["loglevel"]]
        argv += ["--without-gossip", "--without-mingle"]
        if options["concurrency"]:
            argv += ["--concurrency", str(options["concurrency"])]
        if options["pool"]:
            argv += ["--pool", options["pool"]]
        app.worker_main(argv)
