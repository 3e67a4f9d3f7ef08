"""Parses /metrics with the reference Prometheus text parser and prints name{labels}=value lines."""
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

body = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for family in text_string_to_metric_families(body):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}}={s.value}")
