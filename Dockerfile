# The Prometheus exporters' image: a static binary built by promu
# (`.bin/promu build --prefix .build/${OS}-${ARCH}`) on Prometheus's minimal
# busybox base. Build with
#   docker buildx build --platform linux/amd64 --build-arg ARCH=amd64 -t flux-exporter .
FROM quay.io/prometheus/busybox:latest
LABEL org.opencontainers.image.title="flux_exporter" \
      org.opencontainers.image.description="Prometheus exporter for Flux CD" \
      org.opencontainers.image.source="https://github.com/flux-exporter/flux_exporter"

ARG ARCH="amd64"
ARG OS="linux"
COPY .build/${OS}-${ARCH}/flux_exporter /bin/flux_exporter

EXPOSE      9899
USER        nobody
ENTRYPOINT  [ "/bin/flux_exporter" ]
