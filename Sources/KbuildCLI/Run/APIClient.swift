import AsyncHTTPClient
import Foundation
import KbuildAPI
import KbuildCore
import NIOCore
import NIOHTTP1
import KbuildState

/// The CLI's way to the API: where it is and the token, from (in order)
/// $KBUILD_URL and $KBUILD_TOKEN, the file `kbuild login` writes, or the
/// `kbuild up` of this machine's data dir.
struct APIClient {
    let base: String
    let token: String

    struct Credentials: Codable {
        var url: String
        var token: String
    }

    static var credentialsFile: String {
        let env = ProcessInfo.processInfo.environment
        let config = env["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) + "/.config")
        return config + "/kbuild/credentials.json"
    }

    static func resolve(_ global: GlobalOptions) throws -> APIClient {
        let env = ProcessInfo.processInfo.environment
        if let url = env["KBUILD_URL"], !url.isEmpty, let token = env["KBUILD_TOKEN"], !token.isEmpty {
            return APIClient(base: url, token: token)
        }
        // An explicit data dir means that machine's kbuild, whatever login says.
        if global.dataDir == nil && env["KBUILD_DATA_DIR"] == nil,
           let data = FileManager.default.contents(atPath: credentialsFile),
           let saved = try? JSONDecoder().decode(Credentials.self, from: data) {
            return APIClient(base: saved.url, token: saved.token)
        }
        let dir = global.dir
        guard let url = (try? String(contentsOf: dir.serverURLFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines), !url.isEmpty else {
            throw KbuildError(.notFound, "failed to find kbuild's API: no `kbuild up` is running on \(dir.root.path) (start one, or kbuild login URL)")
        }
        return APIClient(base: url, token: try AdminToken.loadOrCreate(in: dir))
    }

    func get<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try decode(try await request(.GET, path, body: nil))
    }

    func send<T: Decodable>(_ method: HTTPMethod, _ path: String, _ body: some Encodable, as type: T.Type = T.self) async throws -> T {
        try decode(try await request(method, path, body: Data(try JSONEncoder().encode(body))))
    }

    func delete<T: Decodable>(_ path: String, as type: T.Type = T.self) async throws -> T {
        try decode(try await request(.DELETE, path, body: nil))
    }

    func text(_ path: String) async throws -> String {
        String(decoding: try await request(.GET, path, body: nil), as: UTF8.self)
    }

    func request(_ method: HTTPMethod, _ path: String, body: Data?) async throws -> Data {
        let response = try await open(method, path, body: body, timeout: .seconds(60))
        return Data(buffer: try await response.body.collect(upTo: 64 << 20))
    }

    /// The response as it arrives, for streams (`kbuild run`); an error status is thrown as its error.
    func open(_ method: HTTPMethod, _ path: String, body: Data?, timeout: TimeAmount) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: base + API.prefix + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "User-Agent", value: "kbuild-cli")
        request.headers.add(name: "Kbuild-Actor", value: currentActor)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: Array(body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: timeout)
        } catch {
            throw KbuildError(.io, "failed to reach kbuild at \(base): \(error)")
        }
        guard (200..<300).contains(response.status.code) else {
            let bytes = Data(buffer: try await response.body.collect(upTo: 1 << 20))
            struct Body: Decodable { struct Inner: Decodable { let code: String; let message: String }; let error: Inner }
            if let body = try? JSONDecoder().decode(Body.self, from: bytes) {
                throw KbuildError(KbuildError.Code(rawValue: body.error.code) ?? .io, body.error.message)
            }
            throw KbuildError(.io, "kbuild at \(base) answered \(response.status.code) to \(method) \(path)")
        }
        return response
    }

    func decode<T: Decodable>(_ data: Data) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw KbuildError(.corrupt, "failed to read kbuild's answer: \(error)")
        }
    }
}
