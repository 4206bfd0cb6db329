"""kthybrid builder: GPU targets and pinned versions as data, rendered into Dockerfiles, built."""
