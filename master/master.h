#pragma once
// The master: namespace, chunk map and the RPC services over them. main() builds one with
// real dependencies; tests build one on an in-memory LevelDB and a fake timer.

#include <kj/async.h>
#include <kj/timer.h>

#include <memory>
#include <string>

#include "chunk_manager.h"
#include "master.capnp.h"
#include "namespace.h"
#include "namespace_store.h"

namespace cairn {

struct MasterOptions {
  std::string dataDir;
  leveldb::Env* metaEnv = nullptr;  // null: the real disk
  uint64_t chunkSize = 64ull << 20;
  ChunkManagerOptions chunks;
  kj::Duration heartbeatInterval = 3 * kj::SECONDS;
  kj::Duration trashPeriod = 86400 * kj::SECONDS;  // 0: unlink deletes at once
};

class ChunkserverControl;

class Master {
 public:
  Master(MasterOptions options, kj::Timer& timer, const kj::Clock& clock);
  ~Master();

  // The bootstrap capability served to every peer.
  wire::Master::Client bootstrap();

  Namespace& names() { return *ns; }
  ChunkManager& chunkManager() { return *chunks; }
  const MasterOptions& options() const { return opts; }
  kj::Timer& timer() { return timer_; }
  ChunkserverControl& control() { return *control_; }

 private:
  kj::Promise<void> tickLoop();

  MasterOptions opts;
  kj::Timer& timer_;
  std::unique_ptr<NamespaceStore> store;
  std::unique_ptr<Namespace> ns;
  kj::Own<ChunkserverControl> control_;
  std::unique_ptr<ChunkManager> chunks;
  kj::Promise<void> ticker = nullptr;
};

// Converts the namespace's attributes to the wire form.
void fillAttr(const Inode& inode, uint64_t chunkSize, wire::Attr::Builder out);

}  // namespace cairn
