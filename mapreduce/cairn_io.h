#pragma once
// Blocking Cairn calls for the coordinator's planning and commit and for the workers'
// tasks, over one BlockingClient. Safe to call from any thread but the client's own.

#include <string>
#include <string_view>
#include <vector>

#include "blocking_client.h"
#include "status.h"

namespace cairn::mapreduce {

class CairnIo {
 public:
  explicit CairnIo(ClientOptions options) : client(std::move(options)) {}

  Result<FileAttr> resolve(const std::string& path);
  Result<FileAttr> lookup(uint64_t parent, const std::string& name);
  Result<std::vector<DirEntryInfo>> list(uint64_t dir);
  // Every chunk of a file (holes absent).
  Result<FileLayout> layout(uint64_t inode);
  // Like `mkdir -p`; returns the directory's attributes.
  Result<FileAttr> makeDirs(const std::string& path, uint32_t uid, uint32_t gid);
  Result<FileAttr> mkdir(uint64_t parent, const std::string& name, uint32_t uid, uint32_t gid);
  Status removeTree(uint64_t parent, const std::string& name);
  Status unlink(uint64_t parent, const std::string& name);
  Status rename(uint64_t fromDir, const std::string& from, uint64_t toDir, const std::string& to,
                bool noReplace);
  Result<std::string> read(uint64_t inode, uint64_t offset, uint64_t length);

  // A new file (it must not exist), written front to back through the write-back cache.
  Result<FileAttr> create(uint64_t parent, const std::string& name, uint32_t uid, uint32_t gid);
  Status append(uint64_t inode, uint64_t offset, std::string data);
  // Writes out what is buffered, syncs every replica, records the size.
  Status close(uint64_t inode);

 private:
  BlockingClient client;
};

}  // namespace cairn::mapreduce
