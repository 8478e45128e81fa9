#include "master.h"

#include "chunkserver_service.h"
#include "log.h"

namespace cairn {
namespace {

class MasterImpl final : public wire::Master::Server {
 public:
  explicit MasterImpl(Master& master)
      : clientService(newClientService(master)), registry(newChunkserverRegistry(master)) {}

  kj::Promise<void> client(ClientContext context) override {
    context.getResults().setService(clientService);
    return kj::READY_NOW;
  }
  kj::Promise<void> chunkserver(ChunkserverContext context) override {
    context.getResults().setService(registry);
    return kj::READY_NOW;
  }

 private:
  wire::ClientService::Client clientService;
  wire::ChunkserverRegistry::Client registry;
};

}  // namespace

Master::Master(MasterOptions options, kj::Timer& timer, const kj::Clock& clock)
    : opts(std::move(options)), timer_(timer) {
  store = std::make_unique<NamespaceStore>(opts.dataDir + "/meta", opts.metaEnv);
  ns = std::make_unique<Namespace>(*store, clock, opts.chunkSize);
  if (ns->chunkSize() != opts.chunkSize) {
    logWarn("chunk size is {} (fixed when {} was created), not {}", ns->chunkSize(),
            opts.dataDir, opts.chunkSize);
  }
  control_ = kj::heap<ChunkserverControl>(timer, opts.chunks.rpcTimeout);
  chunks = std::make_unique<ChunkManager>(*ns, *control_, timer, opts.chunks);
  ns->setTrashPeriod(opts.trashPeriod);
  chunks->loadFromNamespace();
  ticker = tickLoop().eagerlyEvaluate([](kj::Exception&& e) {
    logError("background work stopped: {}", e.getDescription().cStr());
  });
}

Master::~Master() = default;

wire::Master::Client Master::bootstrap() { return kj::heap<MasterImpl>(*this); }

kj::Promise<void> Master::tickLoop() {
  return timer_.afterDelay(kj::SECONDS)
      .then([this]() {
        chunks->tick();
        if (chunks->inSafeMode()) return kj::Promise<void>(kj::READY_NOW);
        // Trashed files past their period: their chunks go at the next heartbeats.
        return ns->expireTrash().then([this](MutationResult r) {
          if (!r.releasedHandles.empty()) {
            logInfo("trash: {} chunks of expired files released", r.releasedHandles.size());
          }
          chunks->release(r.releasedHandles);
        });
      })
      .then([this]() { return tickLoop(); });
}

static_assert(static_cast<int>(wire::FileType::BLOCK_DEVICE) ==
              static_cast<int>(InodeType::BLOCK_DEVICE));
static_assert(static_cast<int>(wire::FileType::SYMLINK) == static_cast<int>(InodeType::SYMLINK));

void fillAttr(const Inode& n, uint64_t chunkSize, wire::Attr::Builder out) {
  out.setInode(n.inode);
  // The two enums share their values (checked below), so the type converts directly.
  out.setType(static_cast<wire::FileType>(n.type));
  out.setRdev(n.rdev);
  out.setMode(n.mode);
  out.setUid(n.uid);
  out.setGid(n.gid);
  out.setNlink(n.nlink);
  out.setSize(n.size);
  out.setAtimeNs(n.atimeNs);
  out.setMtimeNs(n.mtimeNs);
  out.setCtimeNs(n.ctimeNs);
  out.setReplication(n.replication);
  out.setChunkCount(static_cast<uint32_t>((n.size + chunkSize - 1) / chunkSize));
}

}  // namespace cairn
