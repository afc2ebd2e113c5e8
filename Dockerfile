# One image for every service, the gateway and the simulators; the Deployment's args pick the process.
FROM python:3.11-slim
RUN useradd --uid 10001 --create-home idsync
WORKDIR /app
COPY pyproject.toml ./
COPY common ./common
COPY services ./services
COPY gateway ./gateway
COPY simulators ./simulators
RUN pip install --no-cache-dir . && python -c "import common.runner"
USER 10001
ENV PYTHONUNBUFFERED=1
