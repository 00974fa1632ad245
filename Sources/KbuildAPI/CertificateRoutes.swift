import Foundation
import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState

/// An app's TLS certificates: `kbuild certs`, `certs:add`, `certs:remove`, `certs:generate`. A
/// certificate must cover one of the app's hosts (its custom domains or APP.localhost), so no tenant
/// can put its certificate in front of another's domain; the router serves each of the app's hosts
/// the valid certificate covering it that lasts longest. The API answers what a certificate is, never
/// its key or chain.
extension APIRoutes {
    func registerCertificates(on router: Router<Context>) {
        let p = API.prefix
        router.get("\(p)/apps/:app/certs") { r, c in
            try await self.answer {
                let view = try await self.viewing(r, app: try self.app(c))
                let app = try await view.existing(c)
                let hosts = try await view.hosts(app)
                return try await view.certificates(app).certificates.map { $0.info(domains: hosts) }
            }
        }
        router.post("\(p)/apps/:app/certs") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let upload = try await self.decode(API.CertificateUpload.self, r, c)
                let stored = try AppCertificate.check(chainPEM: upload.chain, keyPEM: upload.key)
                return try await self.keep(stored, app: app, actor: self.actor(r))
            }
        }
        router.post("\(p)/apps/:app/certs/generate") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let (chain, key) = try AppCertificate.selfSigned(names: try await self.hosts(app))
                return try await self.keep(try AppCertificate.check(chainPEM: chain, keyPEM: key, source: "generated"), app: app, actor: self.actor(r))
            }
        }
        router.delete("\(p)/apps/:app/certs/:id") { r, c in
            try await self.answer {
                let app = try await self.existing(c)
                let id = c.parameters.get("id") ?? ""
                let hosts = try await self.hosts(app)
                let updated = try await self.refs.update(try Schema.certs(app), as: AppCertificates.self, in: self.keg, what: "certificates",
                                                         actor: self.actor(r)) { old in
                    var list = old?.certificates ?? []
                    guard let index = list.firstIndex(where: { $0.id == id }) else { throw KbuildError(.notFound, "\(app) has no certificate \(id)") }
                    list.remove(at: index)
                    return AppCertificates(list)
                }
                return (updated.record?.certificates ?? []).map { $0.info(domains: hosts) }
            }
        }
    }

    /// The hosts the router serves `app` at: APP.localhost and its custom domains.
    func hosts(_ app: String) async throws -> [String] {
        ["\(app).localhost"] + (try await domains(app))
    }

    func certificates(_ app: String) async throws -> AppCertificates {
        guard let ref = try await refs.get(try Schema.certs(app)) else { return AppCertificates([]) }
        return try await reader.record(AppCertificates.self, ref.kid, what: "certificates")
    }

    /// Adds (or replaces, by id) a checked certificate, once it covers one of the app's hosts.
    func keep(_ certificate: StoredCertificate, app: String, actor: String) async throws -> API.CertificateInfo {
        let hosts = try await hosts(app)
        guard hosts.contains(where: certificate.covers) else {
            throw KbuildError(.invalidArgument, "the certificate is for \(certificate.names.joined(separator: ", ")), none of \(app)'s hosts "
                              + "(\(hosts.joined(separator: ", "))): add the domain first (kbuild domains:add \(app) DOMAIN)")
        }
        _ = try await refs.update(try Schema.certs(app), as: AppCertificates.self, in: keg, what: "certificates", actor: actor) { old in
            var list = (old?.certificates ?? []).filter { $0.id != certificate.id }
            guard list.count < AppCertificates.maxPerApp else {
                throw KbuildError(.conflict, "\(app) has \(list.count) certificates, the most an app may keep: remove one first (kbuild certs:remove)")
            }
            list.append(certificate)
            return AppCertificates(list)
        }
        return certificate.info(domains: hosts)
    }
}
