# The vudsync image: every component (`vudsync run producer|planner|sink|lag-exporter`), the
# control plane (`vudsync ...`) and the reference cloud API (`python -m cloud`).
# Built by compose/docker-compose.yml (context: the repository root).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# an unprivileged user; its home is vudsync's state folder (ledgers, planner state)
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/vudsync --create-home vudsync

WORKDIR /src
# the pinned dependencies first, from pyproject.toml alone: this layer is rebuilt only when
# pyproject.toml changes, not on every code change
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY kernel ./kernel
COPY schemas ./schemas
COPY producers ./producers
COPY processors ./processors
COPY sinks ./sinks
COPY cloudcapture ./cloudcapture
COPY cloud ./cloud
COPY vudsync ./vudsync
# devtools/ (local broker, seed data, demo, benchmarks) stays out of the production image
RUN pip install --no-deps . && rm -rf /src/build /tmp/requirements.txt

USER vudsync
WORKDIR /var/lib/vudsync
ENV VUDSYNC_HOME=/var/lib/vudsync

CMD ["vudsync", "--help"]
