# Debian-based image with the same steps as the README quick start.
#   docker build -t bench .
#   docker run --rm bench                 # make run (FP32 baseline + result record)
#   docker run --rm bench make test
FROM python:3.11-bookworm

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bench
COPY pyproject.toml README.md Makefile ./
COPY bench ./bench
COPY bench/conf ./bench/conf
COPY scripts ./scripts
COPY tests ./tests
RUN make venv

ENV BENCH_CACHE=/opt/bench/.cache
CMD ["make", "run"]
