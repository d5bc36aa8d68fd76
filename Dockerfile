# recstream worker and API image (CPU). GPU users build from a CUDA base and add the gpu extra.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY store ./store
COPY model ./model
RUN pip install --no-cache-dir .
ENV RECSTREAM_DATA_DIR=/var/lib/recstream
ENTRYPOINT ["recstream"]
CMD ["worker"]
