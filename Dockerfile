# latfarm: the API, workers and virtual phones, from one image.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/latfarm
ENV PATH=/opt/latfarm/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
COPY profilers ./profilers
COPY migrations ./migrations
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 latfarm
COPY --from=build /opt/latfarm /opt/latfarm
ENV PATH=/opt/latfarm/bin:$PATH \
    LATFARM_HOST=0.0.0.0 \
    LATFARM_STATE_DIR=/home/latfarm/state
USER latfarm
WORKDIR /home/latfarm
EXPOSE 8000
CMD ["latfarm", "serve", "--host", "0.0.0.0", "--port", "8000"]
