"""The status tags a sample can carry: what the machine was doing when it was taken.

Defined once here, in the base, so status.json, the gpu-burn phases, the plots' colours and
the report's phase split agree on the same words.
"""

IDLE = "idle"
PROD = "prod"
BENCH = "bench"
TAGS = (IDLE, PROD, BENCH)
