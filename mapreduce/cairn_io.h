#pragma once
// Blocking Cairn calls for the coordinator's planning and commit and for the workers'
// tasks, over one BlockingClient. Safe to call from any thread but the client's own.

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "blocking_client.h"
#include "record_io.h"
#include "status.h"

namespace cairn::mapreduce {

class CairnIo {
 public:
  explicit CairnIo(ClientOptions options) : client(std::move(options)) {}

  // `as`: for whom (the job's submitter); else the worker's or coordinator's certificate.
  Result<FileAttr> resolve(const std::string& path, std::optional<Caller> as = std::nullopt);
  Result<FileAttr> lookup(uint64_t parent, const std::string& name);
  Result<std::vector<DirEntryInfo>> list(uint64_t dir, std::optional<Caller> as = std::nullopt);
  // Every chunk of a file (holes absent).
  Result<FileLayout> layout(uint64_t inode, std::optional<Caller> as = std::nullopt);
  // Like `mkdir -p`; returns the directory's attributes.
  Result<FileAttr> makeDirs(const std::string& path, uint32_t uid, uint32_t gid);
  Result<FileAttr> mkdir(uint64_t parent, const std::string& name, uint32_t uid, uint32_t gid);
  Status removeTree(uint64_t parent, const std::string& name);
  Status unlink(uint64_t parent, const std::string& name);
  Status rename(uint64_t fromDir, const std::string& from, uint64_t toDir, const std::string& to,
                bool noReplace);
  Result<std::string> read(uint64_t inode, uint64_t offset, uint64_t length);

  // A new file written front to back through libcairn's open-file path, under a
  // temporary name, and put in place whole by commit().
  class Writer {
   public:
    ~Writer();  // a writer not committed is abandoned: its temporary goes
    Status append(std::string data);
    // Syncs every replica, then renames the temporary to the file's name, never replacing
    // one: alreadyExists when it exists by then (the temporary is gone either way).
    Status commit();
    uint64_t written() const { return offset; }

   private:
    friend class CairnIo;
    Writer(BlockingClient& client, kj::Own<OpenFile> file) : client(client), file(kj::mv(file)) {}
    BlockingClient& client;
    kj::Own<OpenFile> file;  // used and destroyed on the client's loop
    uint64_t offset = 0;
  };
  // Records (client/record_io.h) appended to one file by record append, named by
  // `writerId` and sequence numbers from 1, in batches of up to 1 MiB. The same writer id
  // and payloads make the same records: a reader drops the copies another attempt (a
  // re-execution, a backup) appended.
  class RecordAppender {
   public:
    Status add(std::string_view payload);
    // Sends the last batch, then syncs every chunk appended to on every replica.
    Status close();
    uint64_t written() const { return bytes; }

   private:
    friend class CairnIo;
    RecordAppender(BlockingClient& client, uint64_t inode, uint64_t chunkSize, uint64_t writerId)
        : client(client), inode(inode), chunkSize(chunkSize), writer(writerId) {}
    Status send();
    BlockingClient& client;
    uint64_t inode, chunkSize;
    RecordWriter writer;
    std::string batch;
    std::set<uint32_t> chunks;  // appended to
    uint64_t bytes = 0;
  };
  Result<std::unique_ptr<RecordAppender>> appendRecords(uint64_t inode, uint64_t writerId);
  // A new empty file `name` in `dir` (an existing one is kept), owned by uid/gid.
  Result<FileAttr> createFile(uint64_t dir, const std::string& name, uint32_t uid, uint32_t gid);

  // `name` in `dir`, written as `tempName` in `tempDir` until committed.
  Result<std::unique_ptr<Writer>> createAtomically(uint64_t dir, const std::string& name,
                                                   uint64_t tempDir, const std::string& tempName,
                                                   uint32_t uid, uint32_t gid);

 private:
  BlockingClient client;
};

}  // namespace cairn::mapreduce
