#pragma once
// Compact containers for the chunk manager, whose memory grows with the chunks of the
// cluster (a hundred million and more): a chunk's replica list inline, a table of chunks by
// handle that keeps each entry in place, and each chunkserver's set of handles in sorted
// blocks. Each costs a few bytes per entry where the standard node-based containers cost
// forty to sixty.

#include <kj/debug.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

namespace cairn {

// The servers holding one chunk's replicas, ascending: three ids inline (the usual goal),
// more on the heap (a copy in flight, a higher goal). Server ids are the chunk manager's
// own, one per chunkserver ever registered, so 32 bits hold them.
class ReplicaSet {
 public:
  ReplicaSet() = default;
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;
  ReplicaSet(ReplicaSet&& other) noexcept { take(other); }
  ReplicaSet& operator=(ReplicaSet&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~ReplicaSet() { release(); }

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const uint32_t* begin() const { return data(); }
  const uint32_t* end() const { return data() + n_; }
  bool count(uint64_t id) const { return std::binary_search(begin(), end(), id); }

  // False if `id` was there already.
  bool insert(uint64_t id) {
    KJ_REQUIRE(id <= UINT32_MAX, "server id out of range", id);
    const uint32_t* at = std::lower_bound(begin(), end(), id);
    if (at != end() && *at == id) return false;
    size_t pos = static_cast<size_t>(at - begin());
    if (n_ == cap_) grow();
    uint32_t* d = data();
    std::memmove(d + pos + 1, d + pos, (n_ - pos) * sizeof(uint32_t));
    d[pos] = static_cast<uint32_t>(id);
    ++n_;
    return true;
  }
  // False if `id` was not there.
  bool erase(uint64_t id) {
    const uint32_t* at = std::lower_bound(begin(), end(), id);
    if (at == end() || *at != id) return false;
    size_t pos = static_cast<size_t>(at - begin());
    uint32_t* d = data();
    std::memmove(d + pos, d + pos + 1, (n_ - pos - 1) * sizeof(uint32_t));
    --n_;
    return true;
  }
  void clear() { n_ = 0; }
  std::vector<uint64_t> toVector() const { return std::vector<uint64_t>(begin(), end()); }

 private:
  static constexpr uint8_t INLINE = 3;
  // Inline ids, or (once cap_ > INLINE) a heap pointer stored in the first two words.
  uint32_t words_[INLINE] = {};
  uint8_t n_ = 0;
  uint8_t cap_ = INLINE;

  uint32_t* heap() const {
    uint32_t* p;
    std::memcpy(&p, words_, sizeof p);
    return p;
  }
  void setHeap(uint32_t* p) { std::memcpy(words_, &p, sizeof p); }
  const uint32_t* data() const { return cap_ > INLINE ? heap() : words_; }
  uint32_t* data() { return cap_ > INLINE ? heap() : words_; }
  void grow() {
    KJ_REQUIRE(cap_ < 128, "too many replicas of one chunk");
    uint8_t cap = static_cast<uint8_t>(cap_ * 2);
    uint32_t* p = new uint32_t[cap];
    std::memcpy(p, data(), n_ * sizeof(uint32_t));
    release();
    setHeap(p);
    cap_ = cap;
  }
  void release() {
    if (cap_ > INLINE) delete[] heap();
    cap_ = INLINE;
  }
  void take(ReplicaSet& other) {
    std::memcpy(words_, other.words_, sizeof words_);
    n_ = other.n_;
    cap_ = other.cap_;
    other.n_ = 0;
    other.cap_ = INLINE;
  }
};
static_assert(sizeof(ReplicaSet) == 16);

// What chunkservers reported of one chunk to a standby master (its mirror of their
// reports): the version each server holds, three inline, more on the heap. The key of a
// ChunkTable (`handle`).
class ReportedCopies {
 public:
  uint64_t handle = 0;

  ReportedCopies() = default;
  ReportedCopies(const ReportedCopies&) = delete;
  ReportedCopies& operator=(const ReportedCopies&) = delete;
  // A moved-from one is empty, with handle 0 (a free slot).
  ReportedCopies(ReportedCopies&& other) noexcept { *this = std::move(other); }
  ReportedCopies& operator=(ReportedCopies&& other) noexcept {
    if (this != &other) {
      handle = std::exchange(other.handle, 0);
      std::memcpy(versions_, other.versions_, sizeof versions_);
      std::memcpy(servers_, other.servers_, sizeof servers_);
      n_ = std::exchange(other.n_, 0);
      more_ = std::move(other.more_);
    }
    return *this;
  }

  bool empty() const { return n_ == 0; }
  size_t size() const { return n_ + (more_ ? more_->size() : 0); }
  // The version `server` reported; 0 if none.
  uint64_t version(uint64_t server) const {
    for (uint8_t i = 0; i < n_; ++i) {
      if (servers_[i] == server) return versions_[i];
    }
    if (more_) {
      for (auto& [s, v] : *more_) {
        if (s == server) return v;
      }
    }
    return 0;
  }
  void set(uint64_t server, uint64_t version) {
    KJ_REQUIRE(server <= UINT32_MAX, "server id out of range", server);
    for (uint8_t i = 0; i < n_; ++i) {
      if (servers_[i] == server) {
        versions_[i] = version;
        return;
      }
    }
    if (more_) {
      for (auto& [s, v] : *more_) {
        if (s == server) {
          v = version;
          return;
        }
      }
    }
    if (n_ < INLINE) {
      servers_[n_] = static_cast<uint32_t>(server);
      versions_[n_++] = version;
      return;
    }
    if (!more_) more_ = std::make_unique<std::vector<std::pair<uint32_t, uint64_t>>>();
    more_->emplace_back(static_cast<uint32_t>(server), version);
  }
  // False if `server` reported none.
  bool erase(uint64_t server) {
    for (uint8_t i = 0; i < n_; ++i) {
      if (servers_[i] != server) continue;
      // The hole takes one from the heap if there are any (the heap is used only when the
      // inline places are full), else the last inline one.
      if (more_) {
        std::tie(servers_[i], versions_[i]) = more_->back();
        more_->pop_back();
        if (more_->empty()) more_.reset();
      } else {
        --n_;
        servers_[i] = servers_[n_];
        versions_[i] = versions_[n_];
      }
      return true;
    }
    if (!more_) return false;
    for (auto& entry : *more_) {
      if (entry.first != server) continue;
      entry = more_->back();
      more_->pop_back();
      if (more_->empty()) more_.reset();
      return true;
    }
    return false;
  }
  // f(server, version) for each server that reported one, in no particular order.
  template <typename F>
  void forEach(F&& f) const {
    for (uint8_t i = 0; i < n_; ++i) f(uint64_t{servers_[i]}, versions_[i]);
    if (more_) {
      for (auto& [s, v] : *more_) f(uint64_t{s}, v);
    }
  }

 private:
  static constexpr uint8_t INLINE = 3;
  uint64_t versions_[INLINE] = {};
  uint32_t servers_[INLINE] = {};
  uint8_t n_ = 0;
  std::unique_ptr<std::vector<std::pair<uint32_t, uint64_t>>> more_;
};
static_assert(sizeof(ReportedCopies) == 56);

// Entries of type T by a 64-bit key that is never 0. Each entry stays at its address until
// it is erased (references survive other insertions), in pages of PAGE entries; an
// open-addressed index (8 bytes a slot, at most 80 % full) finds it by key. `KeyOf()(t)`
// is the key field of an entry (0 in a default-constructed T, which marks a free slot).
// Erasing puts T() in the slot and reuses it later. Walks go by slot number, so that a
// walk across ticks can resume where it stopped (slots()/atSlot()).
template <typename T, typename KeyOf>
class ChunkTable {
 public:
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

  T* find(uint64_t key) {
    if (count_ == 0) return nullptr;
    uint64_t h = hash(key);
    uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      uint64_t b = index_[i];
      if (b == 0) return nullptr;
      if (static_cast<uint32_t>(b >> 32) == tag) {
        T& t = slot(static_cast<uint32_t>(b) - 1);
        if (KeyOf()(t) == key) return &t;
      }
    }
  }
  bool contains(uint64_t key) { return find(key) != nullptr; }
  T& at(uint64_t key) {
    T* t = find(key);
    KJ_REQUIRE(t != nullptr, "no entry", key);
    return *t;
  }
  // The entry for `key`, made (default, with its key set) if there is none.
  T& operator[](uint64_t key) {
    if (T* t = find(key)) return *t;
    KJ_REQUIRE(key != 0, "key 0 marks a free slot");
    if ((count_ + 1) * 5 > index_.size() * 4) rehash(std::max<size_t>(64, index_.size() * 2));
    uint32_t s;
    if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
    } else {
      if (slots_ % PAGE == 0) pages_.push_back(std::make_unique<T[]>(PAGE));
      s = static_cast<uint32_t>(slots_++);
    }
    T& t = slot(s);
    KeyOf()(t) = key;
    place(key, s);
    ++count_;
    return t;
  }
  bool erase(uint64_t key) {
    if (count_ == 0) return false;
    uint64_t h = hash(key);
    uint32_t tag = static_cast<uint32_t>(h >> 32);
    size_t i = h & mask_;
    for (;; i = (i + 1) & mask_) {
      uint64_t b = index_[i];
      if (b == 0) return false;
      if (static_cast<uint32_t>(b >> 32) == tag &&
          KeyOf()(slot(static_cast<uint32_t>(b) - 1)) == key)
        break;
    }
    uint32_t s = static_cast<uint32_t>(index_[i]) - 1;
    slot(s) = T();
    free_.push_back(s);
    --count_;
    // Backward shift: entries after the hole that may live in it move back, so that no
    // probe sequence has a gap (no tombstones).
    for (size_t j = (i + 1) & mask_; index_[j] != 0; j = (j + 1) & mask_) {
      size_t home = hash(KeyOf()(slot(static_cast<uint32_t>(index_[j]) - 1))) & mask_;
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        index_[i] = index_[j];
        i = j;
      }
    }
    index_[i] = 0;
    return true;
  }
  void clear() {
    pages_.clear();
    free_.clear();
    index_.clear();
    slots_ = count_ = 0;
    mask_ = 0;
  }
  // Slot numbers run from 0 to slots(); atSlot(i) is null for a free one.
  size_t slots() const { return slots_; }
  T* atSlot(size_t i) {
    T& t = slot(static_cast<uint32_t>(i));
    return KeyOf()(t) == 0 ? nullptr : &t;
  }
  template <typename F>
  void forEach(F&& f) {
    for (size_t i = 0; i < slots_; ++i) {
      if (T* t = atSlot(i)) f(*t);
    }
  }

 private:
  static constexpr size_t PAGE = 4096;
  std::vector<std::unique_ptr<T[]>> pages_;
  std::vector<uint32_t> free_;
  // 0: empty; else the key's hash's high 32 bits above (slot + 1).
  std::vector<uint64_t> index_;
  size_t mask_ = 0;
  size_t slots_ = 0;
  size_t count_ = 0;

  static uint64_t hash(uint64_t x) {
    // splitmix64's finalizer: handles are sequential, their hashes must not be.
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }
  T& slot(uint32_t s) { return pages_[s / PAGE][s % PAGE]; }
  void place(uint64_t key, uint32_t s) {
    uint64_t h = hash(key);
    size_t i = h & mask_;
    while (index_[i] != 0) i = (i + 1) & mask_;
    index_[i] = (h >> 32 << 32) | (static_cast<uint64_t>(s) + 1);
  }
  void rehash(size_t size) {
    KJ_REQUIRE(size <= (size_t{1} << 32), "too many entries");
    index_.assign(size, 0);
    mask_ = size - 1;
    for (size_t s = 0; s < slots_; ++s) {
      T& t = slot(static_cast<uint32_t>(s));
      if (KeyOf()(t) != 0) place(KeyOf()(t), static_cast<uint32_t>(s));
    }
  }
};

// A chunkserver's chunks: handles in ascending blocks of at most BLOCK, 8 to 16 bytes a
// handle.
class HandleSet {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool contains(uint64_t h) const {
    auto b = blockFor(h);
    return b != blocks_.end() && std::binary_search(b->begin(), b->end(), h);
  }
  bool insert(uint64_t h) {
    if (blocks_.empty()) {
      blocks_.emplace_back(1, h);
      ++size_;
      return true;
    }
    auto b = blockFor(h);
    if (b == blocks_.end()) --b;  // past every block: the last one takes it
    if (std::binary_search(b->begin(), b->end(), h)) return false;
    if (b->size() >= BLOCK) {
      // A full block splits in two halves first, each in a buffer of its own size (a
      // vector keeps its capacity when it shrinks).
      std::vector<uint64_t> lower(b->begin(), b->begin() + BLOCK / 2);
      std::vector<uint64_t> upper(b->begin() + BLOCK / 2, b->end());
      *b = std::move(lower);
      b = blocks_.insert(b + 1, std::move(upper));
      if (h < b->front()) --b;
    }
    b->insert(std::lower_bound(b->begin(), b->end(), h), h);
    ++size_;
    return true;
  }
  bool erase(uint64_t h) {
    auto b = blockFor(h);
    if (b == blocks_.end()) return false;
    auto at = std::lower_bound(b->begin(), b->end(), h);
    if (at == b->end() || *at != h) return false;
    b->erase(at);
    --size_;
    if (b->empty()) {
      blocks_.erase(b);
    } else if (b + 1 != blocks_.end() && b->size() + (b + 1)->size() <= BLOCK / 2) {
      // Two small neighbours become one.
      b->insert(b->end(), (b + 1)->begin(), (b + 1)->end());
      blocks_.erase(b + 1);
    }
    return true;
  }
  void clear() {
    blocks_.clear();
    size_ = 0;
  }
  // Replaces the contents with `handles`, ascending and distinct, in blocks half full (as
  // inserts in order leave them).
  void assignSorted(const std::vector<uint64_t>& handles) {
    KJ_REQUIRE(
        std::adjacent_find(handles.begin(), handles.end(), std::greater_equal<>()) == handles.end(),
        "handles not ascending");
    clear();
    for (size_t at = 0; at < handles.size(); at += BLOCK / 2) {
      size_t end = std::min(handles.size(), at + BLOCK / 2);
      blocks_.emplace_back(handles.begin() + at, handles.begin() + end);
    }
    size_ = handles.size();
  }
  template <typename F>
  void forEach(F&& f) const {
    for (auto& b : blocks_)
      for (uint64_t h : b) f(h);
  }
  // Up to `max` handles in ascending order from the first >= `from`, going round to the
  // smallest after the largest; none twice.
  std::vector<uint64_t> takeFrom(uint64_t from, size_t max) const {
    std::vector<uint64_t> out;
    max = std::min(max, size_);
    out.reserve(max);
    auto first = blockFor(from);
    for (auto b = first; b != blocks_.end() && out.size() < max; ++b) {
      auto at = b == first ? std::lower_bound(b->begin(), b->end(), from) : b->begin();
      for (; at != b->end() && out.size() < max; ++at) out.push_back(*at);
    }
    for (auto b = blocks_.begin(); b != blocks_.end() && b->front() < from && out.size() < max;
         ++b) {
      for (auto at = b->begin(); at != b->end() && *at < from && out.size() < max; ++at) {
        out.push_back(*at);
      }
    }
    return out;
  }
  std::vector<uint64_t> toVector() const {
    std::vector<uint64_t> out;
    out.reserve(size_);
    forEach([&out](uint64_t h) { out.push_back(h); });
    return out;
  }

 private:
  static constexpr size_t BLOCK = 1024;
  std::vector<std::vector<uint64_t>> blocks_;  // each sorted and non-empty, in order
  size_t size_ = 0;

  // The first block whose last handle is >= h.
  std::vector<std::vector<uint64_t>>::const_iterator blockFor(uint64_t h) const {
    return std::lower_bound(
        blocks_.begin(), blocks_.end(), h,
        [](const std::vector<uint64_t>& b, uint64_t v) { return b.back() < v; });
  }
  std::vector<std::vector<uint64_t>>::iterator blockFor(uint64_t h) {
    return std::lower_bound(
        blocks_.begin(), blocks_.end(), h,
        [](const std::vector<uint64_t>& b, uint64_t v) { return b.back() < v; });
  }
};

}  // namespace cairn
