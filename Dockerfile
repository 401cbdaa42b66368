FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common common
COPY crypto_node crypto_node
COPY host_node host_node
COPY branch_node branch_node
COPY branchnet branchnet
COPY dashboard dashboard
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["branchnet", "--help"]
