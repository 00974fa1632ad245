public import AsyncHTTPClient
import Crypto
import Foundation
import KbuildCore
import NIOCore
import NIOSSL
import Synchronization

/// TLS to a kbuild API between machines. Its certificate is signed by that
/// kbuild's own CA, which a client trusts alone (no system roots): given as
/// a PEM file (`KBUILD_CA_FILE`), or fetched once and checked against the
/// hash a join command carries (`fetchCA(from:pin:)`), as `kubeadm join`
/// does, so the first connection cannot be intercepted either.
public enum ClientTLS {
    /// One client per CA for the life of the process (an HTTPClient is made once and never shut down).
    private static let clients = Mutex<[String: HTTPClient]>([:])

    /// The HTTP client that trusts only `caPEM` (nil: the system's roots).
    /// A connection that cannot be made fails at once, not after retries
    /// until the request's deadline: a dead server or an untrusted
    /// certificate is said in a moment, and every caller has its own retry.
    public static func client(trusting caPEM: String?) throws -> HTTPClient {
        let key = caPEM ?? ""
        if let hit = clients.withLock({ $0[key] }) { return hit }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let caPEM {
            let roots: [NIOSSLCertificate]
            do {
                roots = try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8))
            } catch {
                throw KbuildError(.invalidArgument, "failed to read kbuild's CA certificate: \(error)")
            }
            guard !roots.isEmpty else { throw KbuildError(.invalidArgument, "failed to read kbuild's CA certificate: no certificate in it") }
            tls.trustRoots = .certificates(roots)
        }
        return clients.withLock { c in
            if let hit = c[key] { return hit }
            var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
            configuration.connectionPool.retryConnectionEstablishment = false
            let made = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            c[key] = made
            return made
        }
    }

    /// "sha256:HEX" of a PEM holding exactly one certificate (its DER bytes). A
    /// PEM with more is refused: every certificate in it would be trusted, and
    /// only the first hashed, so a pinned CA could smuggle in another.
    public static func hash(pem: String) throws -> String {
        let certificates = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
        guard certificates.count == 1 else {
            throw KbuildError(.invalidArgument, "a CA file must hold exactly one certificate, not \(certificates.count)")
        }
        let der = try certificates[0].toDERBytes()
        return "sha256:" + SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `text` is a CA hash as a join command gives it.
    public static func isHash(_ text: String) -> Bool {
        text.hasPrefix("sha256:") && text.count == 71 && text.dropFirst(7).allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    /// The CA of the kbuild at `base` (https), fetched without trusting
    /// anything yet and accepted only if its hash is `pin`.
    public static func fetchCA(from base: String, pin: String) async throws -> String {
        guard isHash(pin) else { throw KbuildError(.invalidArgument, "invalid CA hash \(pin.debugQuoted): sha256: and 64 lowercase hex digits") }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.connectionPool.retryConnectionEstablishment = false
        let probe = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let fetched: Result<String, any Error>
        do {
            let response = try await probe.execute(HTTPClientRequest(url: base + "/tls/ca.crt"), timeout: .seconds(30))
            if response.status == .ok {
                fetched = .success(String(buffer: try await response.body.collect(upTo: 64 << 10)))
            } else {
                fetched = .failure(KbuildError(.io, "it answered \(response.status.code)"))
            }
        } catch {
            fetched = .failure(error)
        }
        try? await probe.shutdown()
        let pem: String
        switch fetched {
        case .success(let text): pem = text
        case .failure(let error):
            throw KbuildError(.io, "failed to fetch kbuild's CA from \(base): \((error as? KbuildError)?.message ?? "\(error)")")
        }
        let got = (try? hash(pem: pem)) ?? "not one certificate"
        guard got == pin else {
            throw KbuildError(.forbidden, "the CA of \(base) is \(got), not \(pin): refusing to join (a wrong --ca-hash, or someone between this machine and the control plane)")
        }
        return pem
    }
}
