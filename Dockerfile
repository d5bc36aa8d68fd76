# recstream worker, trainer and API image. CPU by default: torch comes from PyTorch's CPU index
# (a plain `pip install torch` downloads a CUDA build of several GB). For a GPU image:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 \
#                --build-arg EXTRAS=gpu -t recstream:gpu .
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY store ./store
COPY model ./model
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"
ENV RECSTREAM_DATA_DIR=/var/lib/recstream
ENTRYPOINT ["recstream"]
CMD ["worker"]
