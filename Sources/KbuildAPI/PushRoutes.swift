import Hummingbird
import KbuildCore
import KbuildServer
import KbuildState
import GitGateway
import NIOCore
import ServiceLifecycle
import Synchronization

/// Where the git hook hands a push to the control plane (admin only: the
/// hook of this machine's repositories, with the admin token):
///
/// - `GET /api/v1/apps/APP/push-terms`: the deploy branch and how much a
///   pushed tree may hold, before the hook reads it into the Keg;
/// - `POST /api/v1/apps/APP/pushes`: deploys it (`DeployPipeline`), the
///   answer streaming `Frame`s: progress as `stderr`, a rejection as
///   `error`, the exit status last. An empty frame goes out every second, so a
///   hook that is gone is noticed at the next write: the pipeline then
///   deploys nothing more and takes a build no worker started off the queue.
extension APIRoutes {
    func registerPushes(on router: Router<Context>) {
        router.get("\(API.prefix)/apps/:app/push-terms") { _, c in
            try await self.answer { try await self.pipeline.terms(try await self.existing(c)) }
        }
        router.post("\(API.prefix)/apps/:app/pushes") { r, c in
            do {
                let app = try await self.existing(c)
                let push = try await self.decode(API.Push.self, r, c)
                // Refused before the answer starts, with the status that says why.
                try await self.pipeline.check(push, app: app)
                var headers = HTTPFields()
                headers[.contentType] = "application/vnd.kbuild.frames"
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    await self.deploy(push, app: app, to: &writer)
                    try await writer.finish(nil)
                })
            } catch {
                return ErrorBody.response(KbuildError.wrap(error))
            }
        }
    }

    /// Runs the pipeline beside a keepalive, writing what both say until the pipeline ends.
    func deploy(_ push: API.Push, app: String, to writer: inout any ResponseBodyWriter) async {
        let (frames, out) = AsyncStream<[UInt8]>.makeStream()
        let watch = PushWatch()
        let pipeline = self.pipeline
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { out.finish() }
                do {
                    try await pipeline.deploy(push, app: app, say: { out.yield(Frame.encode(Frame.stderr, Array($0.utf8))) },
                                              abandoned: {
                                                  if watch.hungUp.load(ordering: .relaxed) { return "the pusher hung up" }
                                                  return watch.stopping.load(ordering: .relaxed) ? DeployPipeline.stopping : nil
                                              })
                    out.yield(Frame.exitStatus(0))
                } catch {
                    out.yield(Frame.encode(Frame.error, Array(KbuildError.wrap(error).message.utf8)))
                    out.yield(Frame.exitStatus(1))
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    if Task.isShuttingDownGracefully { watch.stopping.store(true, ordering: .relaxed) }
                    out.yield(Frame.encode(Frame.stderr, []))
                }
            }
            for await frame in frames where !watch.hungUp.load(ordering: .relaxed) {
                do {
                    try await writer.write(ByteBuffer(bytes: frame))
                } catch {
                    watch.hungUp.store(true, ordering: .relaxed)
                }
            }
            group.cancelAll()
        }
    }
}

/// Why a push's pipeline should stop: the hook hung up (a write failed), or this server is stopping.
final class PushWatch: Sendable {
    let hungUp = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
}
