"""kthybrid builder: the GPU-target matrix and pinned versions as data, rendered into Dockerfiles and built."""
