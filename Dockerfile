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
 && swift build -c release --product kbuild-sandbox \
 && install -D -m 0755 .build/release/kbuild /out/kbuild \
 && install -D -m 0755 .build/release/kbuild-sandbox /out/kbuild-sandbox

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgit2-1.5 libarchive13 libzstd1 libsqlite3-0 git ca-certificates busybox-static debootstrap openssh-server \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/kbuild /out/kbuild-sandbox /usr/local/bin/
COPY buildpacks /usr/local/share/kbuild/buildpacks
ENV KBUILD_DATA_DIR=/data
VOLUME /data
EXPOSE 7070
ENTRYPOINT ["kbuild"]
CMD ["up", "--host", "0.0.0.0"]
