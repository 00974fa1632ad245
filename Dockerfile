# Multi-stage: build with the Swift toolchain, run on a slim Debian 12.
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libgit2-dev libarchive-dev libzstd-dev libsqlite3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product kbuild --static-swift-stdlib \
 && install -D -m 0755 .build/release/kbuild /out/kbuild

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgit2-1.5 libarchive13 libzstd1 libsqlite3-0 git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/kbuild /usr/local/bin/kbuild
ENV KBUILD_DATA_DIR=/data
VOLUME /data
EXPOSE 7070
ENTRYPOINT ["kbuild"]
CMD ["up", "--host", "0.0.0.0"]
