#include "cairn_io.h"

#include <fmt/format.h>

namespace cairn::mapreduce {

Result<FileAttr> CairnIo::resolve(const std::string& path, std::optional<Caller> as) {
  return client.run([&](Client& c, FileCache&) { return c.resolve(path, as); });
}

Result<FileAttr> CairnIo::lookup(uint64_t parent, const std::string& name) {
  return client.run([&](Client& c, FileCache&) { return c.lookup(parent, name); });
}

Result<std::vector<DirEntryInfo>> CairnIo::list(uint64_t dir, std::optional<Caller> as) {
  return client.run([&](Client& c, FileCache&) { return c.listAll(dir, as); });
}

Result<FileLayout> CairnIo::layout(uint64_t inode, std::optional<Caller> as) {
  FileLayout all;
  constexpr uint32_t PAGE = 4096;
  for (uint64_t first = 0;; first += PAGE) {
    auto page = client.run([&](Client& c, FileCache&) {
      return c.layout(inode, static_cast<uint32_t>(first), PAGE, as);
    });
    if (!page.ok()) return page.status;
    all.chunkSize = page.value.chunkSize;
    all.fileSize = page.value.fileSize;
    for (auto& ch : page.value.chunks) all.chunks.push_back(std::move(ch));
    if (all.chunkSize == 0 || first + PAGE >= (all.fileSize + all.chunkSize - 1) / all.chunkSize) {
      return all;
    }
  }
}

Result<FileAttr> CairnIo::mkdir(uint64_t parent, const std::string& name, uint32_t uid,
                                uint32_t gid) {
  return client.run([&](Client& c, FileCache&) {
    return c.mkdir(parent, name, 0755, Caller{uid, {gid}});
  });
}

Result<FileAttr> CairnIo::makeDirs(const std::string& path, uint32_t uid, uint32_t gid) {
  return client.run([&](Client& c, FileCache&) { return c.makeDirs(path, Caller{uid, {gid}}); });
}

Status CairnIo::removeTree(uint64_t parent, const std::string& name) {
  return client.run([&](Client& c, FileCache&) { return c.removeTree(parent, name); });
}

Status CairnIo::unlink(uint64_t parent, const std::string& name) {
  return client.run([&](Client& c, FileCache&) { return c.unlink(parent, name); });
}

Status CairnIo::rename(uint64_t fromDir, const std::string& from, uint64_t toDir,
                       const std::string& to, bool noReplace) {
  return client.run(
      [&](Client& c, FileCache&) { return c.rename(fromDir, from, toDir, to, noReplace); });
}

Result<std::string> CairnIo::read(uint64_t inode, uint64_t offset, uint64_t length) {
  std::string out;
  Status s = client.run([&](Client& c, FileCache&) { return c.read(inode, offset, length, out); });
  if (!s.ok()) return s;
  return out;
}

Result<std::unique_ptr<CairnIo::Writer>> CairnIo::createAtomically(uint64_t dir,
                                                                   const std::string& name,
                                                                   uint64_t tempDir,
                                                                   const std::string& tempName,
                                                                   uint32_t uid, uint32_t gid) {
  CreateOptions o;
  o.caller = Caller{uid, {gid}};
  o.atomic = true;
  o.tempParent = tempDir;
  o.tempName = tempName;
  o.noReplace = true;
  o.syncOnClose = true;
  auto file = client.run([&](Client&, FileCache& cache) { return cache.create(dir, name, o); });
  if (!file.ok()) return file.status;
  return std::unique_ptr<Writer>(new Writer(client, kj::mv(file.value)));
}

CairnIo::Writer::~Writer() {
  if (file.get() == nullptr) return;
  client.run([&](Client&, FileCache&) { return file->abort().then([this]() { file = nullptr; }); });
}

Status CairnIo::Writer::append(std::string data) {
  uint64_t at = offset;
  offset += data.size();
  return client.run([&](Client&, FileCache&) { return file->write(at, std::move(data)); });
}

Status CairnIo::Writer::commit() {
  return client.run([&](Client&, FileCache&) {
    return file->close().then([this](Status s) {
      file = nullptr;
      return s;
    });
  });
}

Result<FileAttr> CairnIo::createFile(uint64_t dir, const std::string& name, uint32_t uid,
                                     uint32_t gid) {
  return client.run([&](Client& c, FileCache&) {
    return c.create(dir, name, 0644, 0, false, false, Caller{uid, {gid}});
  });
}

Result<std::unique_ptr<CairnIo::RecordAppender>> CairnIo::appendRecords(uint64_t inode,
                                                                        uint64_t writerId) {
  uint64_t chunkSize = client.run([&](Client& c, FileCache&) { return c.ensureChunkSize(inode); });
  if (chunkSize == 0) return Status::unavailable("the master gave no chunk size");
  return std::unique_ptr<RecordAppender>(new RecordAppender(client, inode, chunkSize, writerId));
}

Status CairnIo::RecordAppender::add(std::string_view payload) {
  size_t limit = std::min<uint64_t>(1 << 20, chunkSize / 4);
  if (RECORD_HEADER + payload.size() > limit) {
    return Status::invalidArgument(fmt::format("a record of {} bytes: at most {} fit in one append",
                                               payload.size(), limit - RECORD_HEADER));
  }
  if (batch.size() + RECORD_HEADER + payload.size() > limit) {
    Status s = send();
    if (!s.ok()) return s;
  }
  writer.frame(payload, batch);
  return Status::OK();
}

Status CairnIo::RecordAppender::send() {
  if (batch.empty()) return Status::OK();
  auto at = client.run([&](Client& c, FileCache&) {
    return c.append(inode,
                    kj::arrayPtr(reinterpret_cast<const kj::byte*>(batch.data()), batch.size()));
  });
  if (!at.ok()) return at.status;
  chunks.insert(static_cast<uint32_t>(at.value / chunkSize));
  bytes += batch.size();
  batch.clear();
  return Status::OK();
}

Status CairnIo::RecordAppender::close() {
  Status s = send();
  if (!s.ok() || chunks.empty()) return s;
  return client.run([&](Client& c, FileCache&) {
    return c.syncChunks(inode, {chunks.begin(), chunks.end()})
        .then([&c](Status s) -> kj::Promise<Status> {
          if (!s.ok()) return s;
          return c.syncMetadata();  // the file's size, which the appends moved
        });
  });
}

}  // namespace cairn::mapreduce
