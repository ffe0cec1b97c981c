# Backdrop server with the model weights baked in. CUDA when the container sees a GPU
# (docker run --gpus all ...), CPU otherwise.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    BACKDROP_WEIGHTS=/opt/backdrop/weights \
    PATH=/opt/backdrop/venv/bin:$PATH

# g++ and the Python headers: torch.compile (--compile, on for serve) builds its CPU kernels with them.
# HAProxy: `serve --processes N --proxy haproxy` runs it in front of the processes (deploy/kubernetes).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip python3-dev g++ ca-certificates haproxy \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/backdrop/src
COPY pyproject.toml README.md ./
COPY models ./models
COPY server ./server
COPY static ./static

# torch 2.13.0 and torchvision 0.28.0 from PyPI are CUDA builds; they also run on CPU-only hosts.
# A regular install: the page ships inside the package (server.web.static).
RUN python3 -m venv /opt/backdrop/venv \
 && pip install --no-cache-dir --upgrade pip \
 && pip install --no-cache-dir . \
 && backdrop fetch-weights

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
ENTRYPOINT ["backdrop"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
