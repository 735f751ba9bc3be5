# AstrID Dagster image: one image for the code server (`user-code`), the webserver, the
# daemon and the one-shot `dagster-init` job in docker-compose.yaml.
#
#   docker build -t astrid-dagster .
#
# Settings come only from environment variables (see deploy/astrid.env.example);
# nothing secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    ASTRID_HOME=/opt/dagster/astrid

# CPU-only torch first, from PyTorch's index, so `pip install .` below finds the pin
# (torch==2.13.0 is satisfied by 2.13.0+cpu) and does not pull the CUDA build from PyPI.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /opt/dagster/app
# Dependencies first (pinned in pyproject.toml: dagster-webserver, dagster-postgres, mlflow,
# ...), in a layer that only a change of pyproject.toml rebuilds: without the source tree,
# `pip install .` installs the dependencies and an empty package.
COPY pyproject.toml README.md ./
RUN pip install .
# Then the package itself.
COPY . .
RUN pip install --no-deps --force-reinstall . \
    && python -c "import astrid_assets.definitions"

# Instance config, compose workspace and helper scripts (root-owned, read-only to the app).
COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.docker.yaml /opt/dagster/workspace.yaml
COPY deploy/dagster/ /opt/dagster/bin/

RUN useradd --uid 10001 --user-group --create-home --home-dir /home/astrid astrid \
    && chmod 0755 /opt/dagster/bin/*.sh \
    && mkdir -p ${DAGSTER_HOME}/storage ${ASTRID_HOME} \
    && chown astrid:astrid ${DAGSTER_HOME} \
    && chown -R astrid:astrid ${DAGSTER_HOME}/storage ${ASTRID_HOME}
USER astrid
WORKDIR /opt/dagster

EXPOSE 4000 3000
CMD ["dagster", "code-server", "start", "-m", "astrid_assets.definitions", "-h", "0.0.0.0", "-p", "4000", \
     "--location-name", "astrid"]
