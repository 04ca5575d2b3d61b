//! The netlink side of a slot, through rtnetlink: links, addresses, routes,
//! queue lengths, and reading a qdisc's byte counter. One [`Netlink`] talks to
//! one network namespace: the host's, or a slot's (its socket is created on a
//! thread inside that namespace and stays bound to it).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::Path;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcStats2};
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetError, Result};
use crate::netns;

/// A netlink connection bound to one network namespace.
#[derive(Clone)]
pub(crate) struct Netlink {
    handle: Handle,
}

/// The root qdisc of a link, as far as slots care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootQdisc {
    pub kind: String,
    pub bytes: u64,
}

impl Netlink {
    /// A connection in the calling process's namespace (the host's).
    pub fn host() -> Result<Self> {
        let (connection, handle, messages) = rtnetlink::new_connection()
            .map_err(|err| NetError::io("opening a netlink socket", err))?;
        drop(messages);
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection inside the namespace at `path`.
    pub async fn in_netns(path: &Path) -> Result<Self> {
        let socket = netns::run_in(path, || Socket::new(NETLINK_ROUTE))
            .await
            .map_err(|err| {
                NetError::io(
                    format!("opening a netlink socket in {}", path.display()),
                    err,
                )
            })?;
        // SAFETY: `socket` is a netlink socket we own; ownership of the fd
        // moves into the tokio socket (we are on the runtime it registers with).
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, messages) = rtnetlink::from_socket(socket);
        drop(messages);
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of link `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(link) => Ok(link.map(|link| link.header.index)),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(NetError::netlink(format!("looking up link {name}"), err)),
        }
    }

    /// The index of link `name`, which must exist.
    pub async fn require_link(&self, name: &str) -> Result<u32> {
        self.link_index(name).await?.ok_or_else(|| {
            NetError::io(
                format!("looking up link {name}"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such link"),
            )
        })
    }

    /// Names of every link in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|err| NetError::netlink("listing links", err))?;
        Ok(links
            .into_iter()
            .filter_map(|link| {
                link.attributes.into_iter().find_map(|attr| match attr {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                })
            })
            .collect())
    }

    /// Creates veth `name` here with its peer `peer` already inside the
    /// namespace at `peer_ns` (the peer never appears on the host).
    pub async fn add_veth_into(&self, name: &str, peer: &str, peer_ns: &Path) -> Result<()> {
        let context = || {
            format!(
                "creating veth {name} with peer {peer} in {}",
                peer_ns.display()
            )
        };
        let ns = std::fs::File::open(peer_ns).map_err(|err| NetError::io(context(), err))?;
        let peer_msg = LinkUnspec::new_with_name(peer)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        let added = self.handle.link().add(veth).execute().await;
        drop(ns);
        added.map_err(|err| NetError::netlink(context(), err))
    }

    /// Brings link `index` up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|err| NetError::netlink(format!("bringing link {index} up"), err))
    }

    /// Sets the transmit queue length of link `index`.
    pub async fn set_txqueuelen(&self, index: u32, len: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).txqueuelen(len).build())
            .execute()
            .await
            .map_err(|err| {
                NetError::netlink(format!("setting txqueuelen {len} on link {index}"), err)
            })
    }

    /// Deletes link `name` (a veth takes its peer with it); absent is fine.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Err(err) if errno(&err) != Some(libc::ENODEV) => {
                Err(NetError::netlink(format!("deleting link {name}"), err))
            }
            _ => Ok(()),
        }
    }

    /// Adds `addr/prefix_len` to link `index` (idempotent); without its
    /// subnet route when `prefix_route` is false.
    pub async fn add_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
        prefix_route: bool,
    ) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .replace();
        if !prefix_route {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        request.execute().await.map_err(|err| {
            NetError::netlink(format!("adding {addr}/{prefix_len} to link {index}"), err)
        })
    }

    /// Routes `dest/32` straight out of link `index` (on-link), preferring
    /// source `src`.
    pub async fn add_link_route(&self, dest: Ipv4Addr, index: u32, src: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, 32)
            .output_interface(index)
            .pref_source(src)
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|err| {
                NetError::netlink(format!("adding route {dest}/32 on link {index}"), err)
            })
    }

    /// Routes `dest/prefix_len` via `gateway` on link `index`, preferring
    /// source `src` for traffic that starts here (replacing an earlier route).
    pub async fn add_route(
        &self,
        dest: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        index: u32,
        src: Option<Ipv4Addr>,
    ) -> Result<()> {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix_len)
            .gateway(gateway)
            .output_interface(index);
        if let Some(src) = src {
            route = route.pref_source(src);
        }
        self.handle
            .route()
            .add(route.build())
            .replace()
            .execute()
            .await
            .map_err(|err| {
                NetError::netlink(
                    format!("adding route {dest}/{prefix_len} via {gateway}"),
                    err,
                )
            })
    }

    /// The root qdisc of link `index` (`noqueue` when none was set).
    pub async fn root_qdisc(&self, index: u32) -> Result<Option<RootQdisc>> {
        let qdiscs: Vec<_> = self
            .handle
            .qdisc()
            .get()
            .index(index as i32)
            .execute()
            .try_collect()
            .await
            .map_err(|err| NetError::netlink(format!("listing qdiscs of link {index}"), err))?;
        let root = qdiscs
            .into_iter()
            .find(|q| q.header.index == index as i32 && q.header.parent == TcHandle::ROOT);
        Ok(root.map(|q| {
            let mut qdisc = RootQdisc {
                kind: String::new(),
                bytes: 0,
            };
            for attr in q.attributes {
                match attr {
                    TcAttribute::Kind(kind) => qdisc.kind = kind,
                    TcAttribute::Stats2(stats) => {
                        for stat in stats {
                            if let TcStats2::Basic(basic) = stat {
                                qdisc.bytes = basic.bytes;
                            }
                        }
                    }
                    _ => {}
                }
            }
            qdisc
        }))
    }
}

/// The errno of a netlink error answer, positive.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}
