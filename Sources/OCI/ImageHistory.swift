import KbuildCore
public import KbuildState

extension ImageStore {
    /// An app's images, newest first, each with the commit, source and build its labels name (`image ls`).
    public func history(app: String, refs: any RefStore) async throws -> [API.ImageInfo] {
        var rows: [API.ImageInfo] = []
        for change in try await refs.history(try Schema.image(app)) {
            guard let kid = change.new else { continue }
            let manifest = try self.manifest(kid)
            let labels = try config(of: manifest).config?.Labels ?? [:]
            rows.append(API.ImageInfo(image: kid.description, createdAt: change.time, commit: labels["org.opencontainers.image.revision"],
                                      source: labels["dev.kbuild.source"], build: labels["dev.kbuild.build"],
                                      size: manifest.layers.reduce(0) { $0 + $1.size }))
        }
        return rows
    }
}
