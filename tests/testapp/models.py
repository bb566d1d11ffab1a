from django.db import models


class Execution(models.Model):
    """One execution of a test tool's body, written before it returns."""

    run_id = models.BigIntegerField()
    seq = models.PositiveIntegerField()
    step_key = models.CharField(max_length=100)
    attempt = models.PositiveSmallIntegerField()
    pid = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class Switch(models.Model):
    """A flag a test flips to make a tool fail or recover."""

    name = models.CharField(max_length=50, unique=True)
    on = models.BooleanField(default=False)


class Gauge(models.Model):
    """Calls in flight right now, and the most ever seen, for a key."""

    key = models.CharField(max_length=50, unique=True)
    current = models.IntegerField(default=0)
    peak = models.IntegerField(default=0)
