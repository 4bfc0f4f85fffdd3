# Debian-based image with the same steps as the README quick start, on the same tree: the whole repository is copied
# (.dockerignore leaves out .git, .venv, runs/, caches and build outputs), so bench/ with its Hydra configs
# (bench/conf) and shipped FP32 baselines (bench/shipped), hydra_plugins/ (hydra/launcher=parallel), tests/,
# results/ (results/reference/ is read by the tests), scripts/, benchmarks/ and .ci/ are all there. Without .git,
# records written in the image say git_sha "unknown".
#   docker build -t bench .
#   docker run --rm bench                 # make run (FP32 baseline + result record)
#   docker run --rm bench make test
FROM python:3.11-bookworm

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make git dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/bench
# The dependencies first, in their own layer (rebuilt only when pyproject.toml changes): an edit to the sources does
# not download torch again. `make venv` below then installs the project itself into this .venv.
COPY pyproject.toml ./
RUN python3 -m venv .venv \
 && .venv/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['dev']))" > /tmp/requirements.txt \
 && .venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY . .
RUN make venv

ENV BENCH_CACHE=/opt/bench/.cache
CMD ["make", "run"]
