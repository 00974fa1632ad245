// Stand-in for Sources/OCI/LayerTar.swift (libarchive and the Keg) in the fuzz
// build: OCI.swift names LayerTar.createdTimestamp only when it makes an
// ImageConfig, which the fuzz targets never do.
enum LayerTar {
    static let createdTimestamp = "1980-01-01T00:00:01Z"
}
