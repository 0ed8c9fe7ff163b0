# `embed serve` in a container: a SageMaker endpoint, or any host that runs images.
#
#   docker build -t embedder .
#   docker run -p 8080:8080 -v "$PWD/qa.embed:/opt/ml/model" embedder serve
#
# SageMaker runs the image with the argument `serve` and unpacks the model artifact (an
# `embed encode` output folder, or a model folder for vectors only) into /opt/ml/model; it sends
# GET /ping and POST /invocations to port 8080 (or $SAGEMAKER_BIND_TO_PORT) and authenticates
# callers at the endpoint, hence --no-auth (EMBED_NO_AUTH) on 0.0.0.0 here. Anywhere else, set
# EMBED_API_KEY instead. See docs/serve.md.
FROM python:3.11-slim
WORKDIR /opt/embedder
COPY pyproject.toml README.md ./
COPY embedder embedder
COPY cli cli
# The CPU build of torch first, so the project's pin does not pull the CUDA one.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir ".[serve]"
ENV EMBED_HOST=0.0.0.0 EMBED_NO_AUTH=1 PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["embed"]
CMD ["serve"]
